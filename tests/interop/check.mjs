// The failure every interop script reports: a check of isogate's behaviour that did not hold.
export class CheckFailed extends Error {
  name = 'CheckFailed';
}

export function check(condition, message) {
  if (!condition) throw new CheckFailed(message);
}
