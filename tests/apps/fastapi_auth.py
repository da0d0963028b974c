"""A FastAPI app mounting a server whose route needs SECRET_KEY (tests start it with uvicorn)."""

from fastapi import FastAPI

from nucleus.fortress import Fortress
from nucleus.stream import StreamHandler, StreamServer

server = StreamServer()
server.route("/ws", StreamHandler(), auth=Fortress.query_token())

app = FastAPI(lifespan=server.lifespan)
app.mount("/realtime", server)
