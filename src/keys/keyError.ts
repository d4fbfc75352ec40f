// The error type for every user-facing key failure; its messages say what happened and what to do, and never include secret bytes.

export class KeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KeyError';
  }
}
