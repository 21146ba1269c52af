// Validates AsyncAPI documents with the official AsyncAPI parser (the AsyncAPI 3.0 JSON Schema
// of @asyncapi/specs, plus the parser's rules), Avro payload schemas included.
// Usage: node validate.mjs FILE...  Prints one JSON line per file:
//   {"file": ..., "version": ..., "diagnostics": [{"severity": 0, "code": ..., "message": ..., "path": [...]}]}
// severity 0 is an error, 1 a warning. Exits 1 when a file has an error, 2 on bad usage.
import { readFileSync } from 'node:fs';
import { Parser } from '@asyncapi/parser';
import { AvroSchemaParser } from '@asyncapi/avro-schema-parser';

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node validate.mjs FILE...');
  process.exit(2);
}
const parser = new Parser();
parser.registerSchemaParser(AvroSchemaParser());
let failed = false;
for (const file of files) {
  const { document, diagnostics } = await parser.parse(readFileSync(file, 'utf8'), {
    source: file,
  });
  const found = diagnostics.map((d) => ({
    severity: d.severity,
    code: String(d.code),
    message: d.message,
    path: d.path,
  }));
  if (document === undefined || found.some((d) => d.severity === 0)) failed = true;
  console.log(JSON.stringify({ file, version: document?.version() ?? null, diagnostics: found }));
}
process.exit(failed ? 1 : 0);
