# A wasi:http/proxy component written in Python, built by componentize-py
# (a 17+ MiB component embedding CPython). It checks that components from
# other languages' toolchains run on Wisp unchanged.
#
# Built by the e2e harness:
#   componentize-py -d sdk/wit -w wasi:http/proxy@0.2.12 componentize app -o python-hello.wasm
import os

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path = request.path_with_query() or "/"
        greeting = os.environ.get("GREETING", "hello")
        response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
        response.set_status_code(200)
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        with body.write() as stream:
            stream.blocking_write_and_flush(f"{greeting} from python at {path}".encode())
        OutgoingBody.finish(body, None)
