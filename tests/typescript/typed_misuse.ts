// Mistakes against the generated message types: tests/test_types_command.py blanks each
// expect-error directive and expects exactly the lines after them to fail.
import { connect } from "/nucleus/stream.js";
import type { ChatMessage, Cursor, Mood, Order } from "./messages";

const chat = connect<ChatMessage>("/ws/chat");
// @ts-expect-error: a misspelt field
chat.send({ user: "ann", content: { type: "text", body: "hi" }, reply: 3 });
// @ts-expect-error: a required field missing
chat.send({ user: "ann" });
// @ts-expect-error: a field of the wrong type
chat.send({ user: 7, content: { type: "text", body: "hi" } });
// @ts-expect-error: not a member of the enum
chat.send({ user: "ann", content: { type: "text", body: "hi" }, mood: "angry" });
// @ts-expect-error: an unknown tag of the tagged union
chat.send({ user: "ann", content: { type: "video", body: "hi" } });
// @ts-expect-error: the tag says sticker, the fields say text
chat.send({ user: "ann", content: { type: "sticker", body: "hi" } });
// @ts-expect-error: a pair is two numbers
chat.send({ user: "ann", content: { type: "text", body: "hi" }, position: [1, 2, 3] });
chat.subscribe<ChatMessage>("chat", (m) => {
  // @ts-expect-error: body is only on the text variant
  console.log(m.content.body);
  // @ts-expect-error: reply_to may be null or absent
  console.log(m.reply_to.toFixed());
});
const shop = connect<Order>("/ws/shop");
// @ts-expect-error: sizes are S, M or L
void shop.request({ item: "tea", size: "XL" });
// @ts-expect-error: the item is required
shop.send({ quantity: 2 });
// @ts-expect-error: a category needs its name
shop.send({ item: "tea", category: { parent: null } });
const board = connect<Cursor>("/ws/board");
// @ts-expect-error: a cursor's coordinates are numbers
board.send({ x: "10", y: 2 });
// @ts-expect-error: the board takes cursors, not orders
board.send({ item: "tea" } satisfies Order);
// @ts-expect-error: the enum's values are its members' values, not their names
export const mood: Mood = "CALM";
