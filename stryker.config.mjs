// npm run mutate: mutation testing of the pure decision modules against the socket-free unit
// tests in test/unit/ (each file runs as `node --import tsx`; coverage per file picks which run
// for a mutant). On demand only, not in .ci/run: it takes minutes of CPU. Concurrency 1 because
// the machine is shared; raise it with --concurrency on a machine of your own.
/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  packageManager: 'npm',
  testRunner: 'tap',
  tap: {
    testFiles: [
      'test/unit/*.test.ts'
    ],
    nodeArgs: [
      '--import',
      'tsx'
    ],
    forceBail: true
  },
  checkers: [
    'typescript'
  ],
  tsconfigFile: 'tsconfig.stryker.json',
  typescriptChecker: {
    prioritizePerformanceOverAccuracy: true
  },
  mutate: [
    'lib/proxy/retry.ts',
    'lib/errors/classify.ts',
    'lib/pool/outlier.ts',
    'lib/pool/budget.ts',
    'lib/proxy/candidates.ts',
    'lib/proxy/continue.ts',
    'lib/proxy/forwarding.ts',
    'lib/proxy/path.ts',
    'lib/proxy/location.ts'
  ],
  ignorePatterns: [
    'dist',
    '.tap',
    'reports',
    'bench',
    'examples',
    'docs',
    'types'
  ],
  coverageAnalysis: 'perTest',
  concurrency: 1,
  timeoutMS: 10000,
  reporters: [
    'clear-text',
    'progress',
    'html',
    'json'
  ],
  htmlReporter: {
    fileName: 'reports/mutation/index.html'
  },
  jsonReporter: {
    fileName: 'reports/mutation/mutation.json'
  },
  thresholds: {
    high: 90,
    low: 85,
    break: 85
  }
}
