// The environment for a child process a test starts (the demo, the close and storm fixtures).
//
// Coverage is measured in the test processes only. A child loads the same lib/ (through tsx or
// as dist/ with source maps) compiled differently from the test processes; merged into one
// report, the two disagree on where statements start, and the total came out anywhere from 92%
// to 64% depending on which process's data was merged first. What a child exercises is proven
// by the test's assertions on it, not by the coverage figure.
export function childEnv (extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, _TAPJS_PROCESSINFO_COVERAGE_: '0', ...extra }
}
