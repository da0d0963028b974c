// Benchmark peer: Socket.IO for Node. A client connecting without role=pub in
// its query is joined to room "bench"; an event "msg" is emitted verbatim as
// event "msg" to the room (the publisher is not in it, so it gets no echo).
// Stops on SIGTERM (default action).
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { Server } from "socket.io";
import { parsePort } from "./args.mjs";

const port = parsePort(process.argv);
const version = createRequire(import.meta.url)("socket.io/package.json").version;
const ROOM = "bench";

const httpServer = createServer();
const io = new Server(httpServer, { transports: ["websocket"], serveClient: false });

io.on("connection", (socket) => {
  if (socket.handshake.query.role !== "pub") socket.join(ROOM);
  socket.on("msg", (data) => io.to(ROOM).emit("msg", data));
});

httpServer.listen({ host: "127.0.0.1", port, backlog: 1024 }, () =>
  console.log(`node ${process.version}, socket.io ${version}, listening on ${port}`),
);
