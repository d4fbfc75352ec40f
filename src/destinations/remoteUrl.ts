// The address of an lnbackup server as a node is given it: lnbackup://<server public key>@host:port.
// The public key (66 hex digits, compressed secp256k1) is pinned: the transport refuses a server
// that cannot prove it holds the matching private key. IPv6 hosts are written in brackets.
import net from 'node:net';
import { parsePublicKeyHex } from '../transport/keys.js';

export const URL_SCHEME = 'lnbackup://';
export const DEFAULT_SERVER_PORT = 9736;

export interface RemoteAddress {
  readonly publicKey: Buffer;
  readonly host: string;
  readonly port: number;
  /** The URL in its canonical form (lowercase key, IPv6 in brackets). */
  readonly url: string;
}

export class RemoteUrlError extends Error {}

const EXPECTED = `${URL_SCHEME}<server public key>@<host>:<port>`;

function shown(url: string): string {
  return JSON.stringify(url.length > 200 ? `${url.slice(0, 200)}...` : url);
}

/** `host` with brackets when it is an IPv6 address. */
export function formatHostPort(host: string, port: number): string {
  return `${net.isIPv6(host) ? `[${host}]` : host}:${port}`;
}

export function formatRemoteUrl(publicKey: Buffer, host: string, port: number): string {
  if (publicKey.length !== 33) throw new RemoteUrlError(`a server public key is 33 bytes, got ${publicKey.length}`);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RemoteUrlError(`port ${port} is not between 1 and 65535`);
  if (host === '') throw new RemoteUrlError('the host is empty');
  return `${URL_SCHEME}${publicKey.toString('hex')}@${formatHostPort(host, port)}`;
}

export function parseRemoteUrl(url: string): RemoteAddress {
  const fail = (why: string): never => {
    throw new RemoteUrlError(`${EXPECTED} expected, got ${shown(url)}: ${why}`);
  };
  const trimmed = url.trim().replace(/\/$/, '');
  if (!trimmed.toLowerCase().startsWith(URL_SCHEME)) fail(`it does not start with ${URL_SCHEME}`);
  const rest = trimmed.slice(URL_SCHEME.length);
  const at = rest.indexOf('@');
  if (at < 0) fail("the server public key and '@' are missing");
  const keyHex = rest.slice(0, at);
  let publicKey: Buffer = Buffer.alloc(0);
  try {
    publicKey = parsePublicKeyHex(keyHex);
  } catch (err) {
    fail((err as Error).message);
  }
  const hostPort = rest.slice(at + 1);
  let host: string;
  let portText: string;
  if (hostPort.startsWith('[')) {
    const m = /^\[([^\]]+)\]:(\d+)$/.exec(hostPort);
    if (!m) fail('an IPv6 host is written [address]:port');
    host = m![1];
    portText = m![2];
    if (!net.isIPv6(host)) fail(`${host} is not an IPv6 address`);
  } else {
    const m = /^([A-Za-z0-9._-]+):(\d+)$/.exec(hostPort);
    if (!m)
      fail(
        hostPort.includes(':') && hostPort.indexOf(':') !== hostPort.lastIndexOf(':')
          ? 'an IPv6 host must be in brackets: [address]:port'
          : 'the host or the port is missing or malformed',
      );
    host = m![1];
    portText = m![2];
  }
  const port = Number(portText);
  if (!Number.isInteger(port) || port < 1 || port > 65535) fail(`port ${portText} is not between 1 and 65535`);
  return { publicKey, host, port, url: formatRemoteUrl(publicKey, host, port) };
}
