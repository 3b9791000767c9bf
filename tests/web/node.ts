// The Node client: `node node.mjs <server base URL> <token>` runs the flow over the Connect
// protocol in JSON and in binary and over gRPC-web, and prints the outcomes as JSON.
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { flow } from "./flow";

const [baseUrl, token] = process.argv.slice(2);
const transports = {
  "connect-json": createConnectTransport({ baseUrl, httpVersion: "1.1" }),
  "connect-binary": createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true }),
  "grpc-web": createGrpcWebTransport({ baseUrl, httpVersion: "1.1" }),
};
const results: Record<string, string[] | string> = {};
let n = 10;
for (const [name, transport] of Object.entries(transports)) {
  try {
    results[name] = await flow(transport, token, `+417912345${n++}`);
  } catch (e) {
    results[name] = `failed: ${e}`;
  }
}
console.log(JSON.stringify(results));
