// neostandard, the style the Fastify organisation lints with. Two rules are widened for patterns
// the tests use on purpose: a floating promise marked with `void` inside a polling callback, and
// a server handle declared before the server exists because its handler reads it later.
import neostandard from 'neostandard'

export default [
  ...neostandard({ ts: true, ignores: ['dist/**', 'coverage/**', '.tap/**'] }),
  {
    rules: {
      'no-void': ['error', { allowAsStatement: true }],
      'prefer-const': ['error', { destructuring: 'all', ignoreReadBeforeAssign: true }]
    }
  }
]
