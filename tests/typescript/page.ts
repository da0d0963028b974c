// A typed page using the whole client API; it must compile under --strict.
import {
  connect,
  renderList,
  Signal,
  type Gap,
  type Meta,
  type PresenceChange,
  type RequestFailure,
  type Stream,
  type StreamErrorInfo,
  type StreamOptions,
  type StreamState,
} from "/nucleus/stream.js";

interface ChatMessage {
  user: string;
  text: string;
  sent?: string;
}

interface Stock {
  item: string;
  left: number;
}

const options: StreamOptions = {
  token: "t0",
  getToken: async () => (await fetch("/token")).text(),
  tokenIn: "query",
  minDelay: 500,
  maxDelay: 30_000,
  stableAfter: 5_000,
  refreshBefore: 30_000,
  maxQueue: 1_000,
  connectTimeout: 10_000,
  heartbeat: 8_000,
  presenceDelay: 2_000,
};

const stream: Stream<ChatMessage> = connect<ChatMessage>("/ws/chat", options);
const untyped = connect(new URL("wss://example.com/ws"), { getToken: () => null });

const messages = new Signal<ChatMessage[]>([]);
const stopSub = stream.subscribe<ChatMessage>("chat", (m, meta: Meta) => {
  messages.modify((list) => list.push(m));
  const where: string | null = meta.channel;
  const offset: number | null = meta.offset;
  console.log(m.text.toUpperCase(), where, meta.event, offset);
});
untyped.subscribe("raw", (data) => {
  if (data instanceof Uint8Array) console.log(data.byteLength);
  else if (typeof data === "string") console.log(data.length);
});

const stopRender = renderList(messages, document.querySelector("ul")!, (m) => `${m.user}: ${m.text}`);
renderList(messages, document.body, (m) => {
  const li = document.createElement("li");
  li.textContent = m.text;
  return li;
});

const online = new Signal<string[]>([]);
const stopPresence = stream.presence("chat", (users: string[], change: PresenceChange) => {
  online.set(users);
  if (change.type !== "state") console.log(change.type, change.user.length);
});

stream.send({ user: "ann", text: "hello" });
untyped.send("plain text");
untyped.send(new Uint8Array([1, 2, 3]));
untyped.send(new Blob(["x"]));
untyped.send({ any: ["json", 1, null] });

async function buy(): Promise<number> {
  try {
    const stock = await stream.request<Stock>({ user: "ann", text: "/buy tea" }, { timeout: 5_000, offline: "reject" });
    return stock.left;
  } catch (error) {
    const failure = error as RequestFailure;
    if (failure.code === "timeout" || failure.code === "out_of_stock") return 0;
    throw failure;
  }
}
void buy();
void untyped.request("ping").then((reply) => reply);
void untyped.request<string>(null, {});

const states: StreamState[] = [stream.state];
const stopState = stream.on("state", (state) => states.push(state));
const stopDirect = stream.on<{ notice: string }>("message", (data, meta) => {
  console.log(data.notice, meta.channel === null);
});
const stopGap = stream.on("gap", ({ channel, epoch, offset }: Gap) => console.log(channel, epoch, offset + 1));
const stopError = stream.on("error", (error: StreamErrorInfo) => {
  if (error.code === "forbidden" && error.channel !== undefined) console.log(error.channel, error.message);
  console.log(error.id ?? 0, error.presence ?? "");
});

const count = new Signal(0);
count.modify((n) => n + 1);
count.subscribe((n: number) => console.log(n));
const n: number = count.get();
const map = new Signal(new Map<string, number>());
map.modify((m) => m.set("a", n));
map.modify((m) => {
  m.delete("a");
});

for (const stop of [stopSub, stopRender, stopPresence, stopState, stopDirect, stopGap, stopError]) stop();
stream.close();
untyped.close();
