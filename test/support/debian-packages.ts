import { accessSync, constants, readFileSync } from 'node:fs';
import { join } from 'node:path';

const LIST = new URL('../debian-packages.txt', import.meta.url);

/**
 * The command a test runs from a Debian package listed in test/debian-packages.txt. When the command
 * is not on this machine this throws, naming the apt-get command that installs the package: a test
 * whose tool is missing fails, it never skips.
 */
export function commandFrom(debianPackage: string): string {
  const entry = readFileSync(LIST, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '' && !line.startsWith('#'))
    .map((line) => line.trim().split(/\s+/))
    .find(([name]) => name === debianPackage);
  if (entry?.[1] === undefined) throw new Error(`${debianPackage} is not listed in test/debian-packages.txt`);
  const command = entry[1];
  if (!installed(command)) {
    throw new Error(
      `${command} not found: install Debian's ${debianPackage} as root with ` +
        `\`apt-get update && apt-get install -y --no-install-recommends ${debianPackage}\` (\`npm test\` run as root installs it)`,
    );
  }
  return command;
}

function installed(command: string): boolean {
  const candidates = command.includes('/') ? [command] : (process.env.PATH ?? '').split(':').filter(Boolean).map((dir) => join(dir, command));
  return candidates.some((path) => {
    try {
      accessSync(path, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}
