// A page sharing its server's message models (tests/apps/typed.py) through the types
// `nucleus types tests.apps.typed:server` generates next to it as messages.d.ts.
import { connect, renderList, Signal } from "/nucleus/stream.js";
import type { Category, ChatMessage, Cursor, Order } from "./messages";

const chat = connect<ChatMessage>("/ws/chat");
const lines = new Signal<ChatMessage[]>([]);
chat.subscribe<ChatMessage>("chat", (m) => lines.modify((list) => list.push(m)));
renderList(lines, document.querySelector("ul")!, (m) => {
  switch (m.content.type) {
    case "text":
      return `${m.user}: ${m.content.body}`;
    case "sticker":
      return `${m.user} sent sticker ${m.content.sticker_id.toFixed(0)}`;
  }
});
chat.send({ user: "ann", content: { type: "text", body: "hello" } });
chat.send({
  user: "bob",
  content: { type: "sticker", sticker_id: 7 },
  mood: "loud",
  reply_to: null,
  attachments: [{ url: "/cat.png", size: 1024 }],
  position: [0.5, 1],
  reactions: { "+1": 2 },
  sent: new Date().toISOString(),
  priority: 9,
});

const shop = connect<Order>("/ws/shop");
async function order(item: string): Promise<number> {
  const receipt = await shop.request<{ total: number }>({ item, quantity: 2, size: "M", note: null });
  return receipt.total;
}
void order("tea");
const path = (c: Category): string => (c.parent ? `${path(c.parent)}/${c.name}` : c.name);
shop.send({ item: "mug", category: { name: "cups", parent: { name: "kitchen", parent: null } } });
shop.on<Order>("message", (echo) => console.log(echo.item, echo.quantity ?? 1, echo.category && path(echo.category)));

const board = connect<Cursor>("/ws/board");
document.addEventListener("mousemove", (event) => board.send({ x: event.clientX, y: event.clientY }));
board.subscribe<Cursor>("cursors", ({ x, y, label }) => console.log(x + y, label?.toUpperCase()));
