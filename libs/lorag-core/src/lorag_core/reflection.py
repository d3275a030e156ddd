"""Server reflection that real clients can use.

With protobuf's upb backend, Python's descriptor pool cannot find a *method* by its full name
(``pkg.Service.Method``), so the stock servicer answers "not found" to ``grpcurl describe pkg.Service.Method``
and ghz cannot find an RPC by reflection (bojand/ghz#419). For a symbol the pool cannot find, this servicer
walks up the dotted name to the enclosing service or message and answers with the file that defines it, which
is what the reflection protocol asks for ("the file containing the symbol").
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer
from grpc_reflection.v1alpha._base import _file_descriptor_response, _not_found_error

SERVICE_NAME = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name


class ResolvingReflectionServicer(ReflectionServicer):  # type: ignore[misc]  # grpc_reflection is untyped
    """grpc.aio reflection that also resolves methods and nested symbols by full name."""

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        name = fully_qualified_name
        while name:
            try:
                descriptor = self._pool.FindFileContainingSymbol(name)
            except KeyError:
                name = name.rpartition(".")[0]
                continue
            return _file_descriptor_response(descriptor, request)
        return _not_found_error(request)


def add_reflection(
    server: grpc.aio.Server, service_names: list[str], pool: descriptor_pool.DescriptorPool | None = None
) -> None:
    """Serve reflection for ``service_names`` (and for reflection itself) on a grpc.aio server."""
    names = [*service_names, SERVICE_NAME]
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(ResolvingReflectionServicer(names, pool), server)
