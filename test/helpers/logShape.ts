// Log lines reduced to their kind, for tallying: the variable parts (URLs, paths, keys, numbers) blanked.
export function logShape(line: string): string {
  return line
    .replace(/lnbackup:\/\/\S+/g, '<url>')
    .replace(/\/\S+/g, '<path>')
    .replace(/[0-9a-f]{16,}/g, '<hex>')
    .replace(/\d+/g, 'N')
    .slice(0, 140);
}
