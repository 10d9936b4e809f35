// Headrace's Node client: the generated RouterService and a one-line way to call it.
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { RouterService } from "./gen/headrace/router/v1/router_pb.js";

export * from "./gen/headrace/router/v1/router_pb.js";
export * from "./gen/headrace/types/v1/types_pb.js";

/**
 * A RouterService client over gRPC (HTTP/2 cleartext) to Envoy's public listener.
 * @param {string} target host:port, default 127.0.0.1:8080
 * @param {string | undefined} token a JWT or API key, sent as `authorization: Bearer …`
 */
export function connect(target = "127.0.0.1:8080", token = undefined) {
  const transport = createGrpcTransport({
    baseUrl: `http://${target}`,
    interceptors: token
      ? [(next) => (req) => {
          req.header.set("authorization", `Bearer ${token}`);
          return next(req);
        }]
      : [],
  });
  return createClient(RouterService, transport);
}
