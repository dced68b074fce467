"""Transport and schema: wire protocol v1 and its one verdict dataclass (``protocol``),
payload decoding (``decode``), binding server sockets (``sockets``), the PUB and
reject-gate sockets (``publisher``) and the control socket (``control``). What the
station does with a frame or a request is ``edge_runtime.station``'s."""
