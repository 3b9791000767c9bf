// `node validate-openapi.mjs <file>`: validates an OpenAPI document (3.0 or 3.1) against the
// specification's schema and checks its references; prints `valid` or the errors.
import SwaggerParser from "@apidevtools/swagger-parser";

try {
  await SwaggerParser.validate(process.argv[2]);
  console.log("valid");
} catch (e) {
  console.error(String(e));
  process.exit(1);
}
