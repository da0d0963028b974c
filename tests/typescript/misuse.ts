// Each line after a @ts-expect-error is a mistake the declarations must catch.
// tests/test_typescript.py blanks the directives and expects exactly these lines to fail.
import { connect, renderList, Signal, type RequestFailure } from "/nucleus/stream.js";

interface ChatMessage {
  user: string;
  text: string;
}

const stream = connect<ChatMessage>("/ws/chat", { heartbeat: 8_000 });
// @ts-expect-error: an unknown option
connect("/ws", { heartBeat: 8_000 });
// @ts-expect-error: tokenIn is "protocol" or "query"
connect("/ws", { tokenIn: "header" });
// @ts-expect-error: the URL is a string or a URL
connect(8080);
// @ts-expect-error: a field the model lacks
stream.send({ user: "ann", txt: "hi" });
// @ts-expect-error: a required field missing
stream.send({ user: "ann" });
// @ts-expect-error: a typed stream does not send what its route would refuse
stream.send("plain text");
// @ts-expect-error: request data is the route's model too
void stream.request({ text: 1, user: "ann" });
// @ts-expect-error: offline is "queue" or "reject"
void stream.request({ text: "hi", user: "ann" }, { offline: "wait" });
stream.subscribe<ChatMessage>("chat", (m) => {
  // @ts-expect-error: a field the subscribed type lacks
  console.log(m.body);
});
// @ts-expect-error: the channel is a string
stream.subscribe(42, () => {});
stream.subscribe("chat", (data) => {
  // @ts-expect-error: untyped data is unknown until narrowed
  console.log(data.text);
});
// @ts-expect-error: no such event
stream.on("messages", () => {});
// @ts-expect-error: a state listener gets a state, not a number
stream.on("state", (state: number) => state);
stream.on("gap", (gap) => {
  // @ts-expect-error: a gap has no id
  console.log(gap.id);
});
stream.presence("chat", (users, change) => {
  // @ts-expect-error: users are ids (strings)
  const first: number = users[0]!;
  // @ts-expect-error: a state change names no user
  if (change.type === "state") console.log(change.user, first);
});
void stream.request<{ left: number }>({ text: "hi", user: "ann" }).then((reply) => {
  // @ts-expect-error: the reply's type is what request<T> said
  const left: string = reply.left;
  return left;
}).catch((error: RequestFailure) => {
  // @ts-expect-error: a failure's code is a string
  const code: number = error.code;
  return code;
});
// @ts-expect-error: state is read-only
stream.state = "open";
// @ts-expect-error: close takes no code
stream.close(1000);

const messages = new Signal<ChatMessage[]>([]);
// @ts-expect-error: a signal holds its type
messages.set([{ user: "ann" }]);
// @ts-expect-error: modify may not replace the array with one of another type
messages.modify((list) => list.map((m) => m.text));
const count = new Signal(0);
// @ts-expect-error: a number signal's modify returns a number
count.modify((n) => String(n));
// @ts-expect-error: renderItem gets the signal's items
renderList(messages, document.body, (m: number) => String(m));
// @ts-expect-error: renderList needs a signal of an iterable
renderList(count, document.body, String);
