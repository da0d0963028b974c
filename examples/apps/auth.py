"""The authenticated connection: a login form gets a token, per-user rooms, forged tokens refused.

Run: SECRET_KEY=$(openssl rand -hex 32) nucleus serve examples.apps.auth:server
then open http://127.0.0.1:3000/. Without SECRET_KEY the server refuses to start.
The code is in src/nucleus/demo/auth.py.
"""

from nucleus.demo.auth import create_app

server = create_app()

if __name__ == "__main__":
    server.run(host="127.0.0.1", port=3000)
