import { writeFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { z } from 'zod';
import { configSchema } from './schema.js';

/**
 * The JSON Schema of the config file, derived from the schema that validates it, so editors
 * (yaml-language-server) complete and check exactly what limpet accepts.
 */
export function configJsonSchema(): Record<string, unknown> {
  const { $schema, ...rest } = z.toJSONSchema(configSchema, { io: 'input' });
  return {
    $schema,
    $id: 'urn:limpet:config',
    title: 'limpet configuration',
    description:
      'Config file of limpet, the sticky-session HTTP reverse proxy. Durations are strings with a unit (250ms, 2s, 5m, 1h, or compounds like 1m30s) or integer milliseconds. ${NAME} and ${NAME:-default} in a value are replaced from the environment.',
    ...rest,
  };
}

/** The file's exact text, as committed in config/limpet.schema.json. */
export function configJsonSchemaText(): string {
  return `${JSON.stringify(configJsonSchema(), null, 2)}\n`;
}

// Write only when run as a script (`npm run schema`), never on import.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const target = fileURLToPath(new URL('../../../config/limpet.schema.json', import.meta.url));
  writeFileSync(target, configJsonSchemaText());
  process.stdout.write(`wrote ${target}\n`);
}
