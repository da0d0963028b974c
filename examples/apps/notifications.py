"""Live notifications: every tab of a user gets them, no one else does, offline tabs catch up.

Run: SECRET_KEY=$(openssl rand -hex 32) nucleus serve examples.apps.notifications:server
then open http://127.0.0.1:3000/ in two tabs, and notify from another terminal:
    curl 'http://127.0.0.1:3000/notifications/notify?user=ann&text=hello'
Without SECRET_KEY the server refuses to start. The code is in src/nucleus/demo/notifications.py.
"""

from nucleus.demo.notifications import create_app

server = create_app()

if __name__ == "__main__":
    server.run(host="127.0.0.1", port=3000)
