// The CLI's two kinds of failure: a usage error (exit 2) and a one-line runtime error (exit 1 or as given).

export class UsageError extends Error {}

export class CliError extends Error {
  constructor(message: string, readonly exitCode = 1) {
    super(message);
  }
}
