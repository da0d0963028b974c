"""The chat app: rooms to pick, a name, recent history, who is online, who is typing.

Run: nucleus serve examples.apps.chat:server   then open http://127.0.0.1:3000/
The code is in src/nucleus/demo/chat.py (page: src/nucleus/demo/static/chat.html).
"""

from nucleus.demo.chat import create_app

server = create_app()

if __name__ == "__main__":
    server.run(host="127.0.0.1", port=3000)
