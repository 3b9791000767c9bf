// The browser page: loaded from another origin than the server's, it runs the flow over the
// Connect protocol and over gRPC-web with connect-web (the browser's fetch, CORS included),
// and posts the outcomes to `/result` on its own origin. `?server=…&token=…`.
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { flow } from "./flow";

async function run(): Promise<Record<string, string[] | string>> {
  const params = new URLSearchParams(location.search);
  const baseUrl = params.get("server") ?? "";
  const token = params.get("token") ?? "";
  const results: Record<string, string[] | string> = { origin: location.origin };
  const transports = {
    connect: createConnectTransport({ baseUrl }),
    "grpc-web": createGrpcWebTransport({ baseUrl }),
  };
  let n = 20;
  for (const [name, transport] of Object.entries(transports)) {
    try {
      results[name] = await flow(transport, token, `+417912345${n++}`);
    } catch (e) {
      results[name] = `failed: ${e}`;
    }
  }
  return results;
}

run()
  .catch((e) => ({ error: String(e) }))
  .then((results) =>
    fetch("/result", { method: "POST", body: JSON.stringify(results) }),
  );
