// Benchmark peer: the `ws` package. Subscribers on /sub join one Set; every
// text message received on /pub is sent to each of them with ws.send(), the
// broadcast loop shown in ws's README. Stops on SIGTERM (default action).
import { createRequire } from "node:module";
import { WebSocket, WebSocketServer } from "ws";
import { parsePort } from "./args.mjs";

const port = parsePort(process.argv);
const version = createRequire(import.meta.url)("ws/package.json").version;
const subscribers = new Set();

const wss = new WebSocketServer({
  host: "127.0.0.1",
  port,
  backlog: 1024,
  perMessageDeflate: false,
  clientTracking: false,
});

wss.on("connection", (ws, req) => {
  if (req.url === "/sub") {
    subscribers.add(ws);
    ws.on("close", () => subscribers.delete(ws));
  } else if (req.url === "/pub") {
    ws.on("message", (data, isBinary) => {
      for (const sub of subscribers) {
        if (sub.readyState === WebSocket.OPEN) sub.send(data, { binary: isBinary });
      }
    });
  } else {
    ws.close(1008, "unknown path");
  }
});

wss.on("listening", () => console.log(`node ${process.version}, ws ${version}, listening on ${port}`));
