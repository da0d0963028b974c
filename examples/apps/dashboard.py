"""The live dashboard: the server's connections, message rates, CPU and memory, charted live.

Run: nucleus serve examples.apps.dashboard:server   then open http://127.0.0.1:3000/
The code is in src/nucleus/demo/dashboard.py (charts: src/nucleus/demo/static/charts.js).
"""

from nucleus.demo.dashboard import create_app

server = create_app()

if __name__ == "__main__":
    server.run(host="127.0.0.1", port=3000)
