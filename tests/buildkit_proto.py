"""BuildKit's trace messages (moby/buildkit ``api/services/control/control.proto``), declared
with the protobuf runtime: tests encode traces with it, so olly's own wire decoder
(olly.buildkitbuild.decode_trace) is checked against an independent encoder, unknown fields included."""

from __future__ import annotations

from typing import Any

_CLASSES: dict[str, Any] = {}


def message_classes() -> dict[str, Any]:
    """StatusResponse and the messages it holds, by name (all of control.proto's fields for
    them as of BuildKit 0.12, so the tests also send the fields olly skips)."""
    if _CLASSES:
        return _CLASSES
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

    F = descriptor_pb2.FieldDescriptorProto
    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    ts = ".google.protobuf.Timestamp"
    messages = {
        "StatusResponse": [("vertexes", 1, F.TYPE_MESSAGE, rep, ".moby.buildkit.v1.Vertex"),
                           ("statuses", 2, F.TYPE_MESSAGE, rep, ".moby.buildkit.v1.VertexStatus"),
                           ("logs", 3, F.TYPE_MESSAGE, rep, ".moby.buildkit.v1.VertexLog"),
                           ("warnings", 4, F.TYPE_MESSAGE, rep, ".moby.buildkit.v1.VertexWarning")],
        "Vertex": [("digest", 1, F.TYPE_STRING, opt, None), ("inputs", 2, F.TYPE_STRING, rep, None),
                   ("name", 3, F.TYPE_STRING, opt, None), ("cached", 4, F.TYPE_BOOL, opt, None),
                   ("started", 5, F.TYPE_MESSAGE, opt, ts), ("completed", 6, F.TYPE_MESSAGE, opt, ts),
                   ("error", 7, F.TYPE_STRING, opt, None)],
        "VertexStatus": [("ID", 1, F.TYPE_STRING, opt, None), ("vertex", 2, F.TYPE_STRING, opt, None),
                         ("name", 3, F.TYPE_STRING, opt, None), ("current", 4, F.TYPE_INT64, opt, None),
                         ("total", 5, F.TYPE_INT64, opt, None), ("timestamp", 6, F.TYPE_MESSAGE, opt, ts),
                         ("started", 7, F.TYPE_MESSAGE, opt, ts), ("completed", 8, F.TYPE_MESSAGE, opt, ts)],
        "VertexLog": [("vertex", 1, F.TYPE_STRING, opt, None), ("timestamp", 2, F.TYPE_MESSAGE, opt, ts),
                      ("stream", 3, F.TYPE_INT64, opt, None), ("msg", 4, F.TYPE_BYTES, opt, None)],
        "VertexWarning": [("vertex", 1, F.TYPE_STRING, opt, None), ("level", 2, F.TYPE_INT64, opt, None),
                          ("short", 3, F.TYPE_BYTES, opt, None), ("detail", 4, F.TYPE_BYTES, rep, None),
                          ("url", 5, F.TYPE_STRING, opt, None)],
    }
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(name="tests/buildkit_control.proto", package="moby.buildkit.v1",
                                              syntax="proto3", dependency=["google/protobuf/timestamp.proto"])
    for name, fields in messages.items():
        msg = file.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            f = msg.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
    pool.Add(file)
    for name in messages:
        _CLASSES[name] = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"moby.buildkit.v1.{name}"))
    return _CLASSES
