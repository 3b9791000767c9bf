// `node validate-openapi.mjs <file>`: validates an OpenAPI document with two validators made for
// the specification: @seriousme/openapi-schema-validator (the document against the schema of
// its own OpenAPI version, 3.1 here, strict) and swagger-parser (the schema, and that every
// reference resolves); prints the version or the errors.
import SwaggerParser from "@apidevtools/swagger-parser";
import { Validator } from "@seriousme/openapi-schema-validator";

try {
  const validator = new Validator();
  const result = await validator.validate(process.argv[2]);
  if (!result.valid) {
    console.error(JSON.stringify(result.errors, null, 2));
    process.exit(1);
  }
  await SwaggerParser.validate(process.argv[2]);
  console.log(`valid OpenAPI ${validator.version}`);
} catch (e) {
  console.error(String(e));
  process.exit(1);
}
