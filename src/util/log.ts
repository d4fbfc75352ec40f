// The log every long-lived part writes to: lightningd's four levels (the plugin turns each line
// into a `log` notification), so code below the plugin can report without knowing who listens.

/** lightningd's log levels. */
export type LogLevel = 'debug' | 'info' | 'unusual' | 'broken';

export type Log = (level: LogLevel, message: string) => void;
