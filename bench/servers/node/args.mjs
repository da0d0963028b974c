// Shared command line parsing for the Node peers: `--port N`.
export function parsePort(argv) {
  const i = argv.indexOf("--port");
  const port = i >= 0 ? Number(argv[i + 1]) : NaN;
  if (!Number.isInteger(port) || port <= 0 || port > 65535) {
    console.error("usage: node <server>.mjs --port N");
    process.exit(2);
  }
  return port;
}
