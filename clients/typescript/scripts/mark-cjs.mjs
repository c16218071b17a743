// The package is "type": "module"; dist/cjs holds CommonJS, so it gets a package.json of its
// own saying so (Node picks the nearest one for a .js file).
import { writeFileSync } from 'node:fs';
writeFileSync(new URL('../dist/cjs/package.json', import.meta.url), '{"type":"commonjs"}\n');
