"""Placeholder OTLP/gRPC receiver.

Starts a grpc server on the OTLP port with the standard health-style
generic handler; the real TraceService is registered here once the
generated OTLP stubs are vendored.
"""
import logging
from concurrent import futures

import grpc

log = logging.getLogger("ollyscale.receiver")


class _PingHandler(grpc.GenericRpcHandler):
    """Answers /ollyscale.Receiver/Ping with the raw request bytes."""

    def service(self, handler_call_details):
        if handler_call_details.method == "/ollyscale.Receiver/Ping":
            return grpc.unary_unary_rpc_method_handler(lambda req, ctx: req)
        return None


def serve(port: int, max_workers: int = 8) -> None:
    logging.basicConfig(level=logging.INFO)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers))
    server.add_generic_rpc_handlers((_PingHandler(),))
    server.add_insecure_port(f"0.0.0.0:{port}")
    server.start()
    log.info("OTLP receiver listening on :%d", port)
    server.wait_for_termination()
