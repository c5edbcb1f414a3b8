import socket, struct, sys, time, ctypes
ETH_P_ALL=3
s=socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
# PACKET_IGNORE_OUTGOING=23, SOL_PACKET=263
s.setsockopt(263, 23, 1)
# classic BPF: ret #0
prog=struct.pack("HBBI", 0x06, 0, 0, 0)
buf=ctypes.create_string_buffer(prog)
fprog=struct.pack("HL", 1, ctypes.addressof(buf))
s.setsockopt(socket.SOL_SOCKET, 26, fprog)  # SO_ATTACH_FILTER
s.bind(("lo" if len(sys.argv)<2 else sys.argv[1], 0)) if False else None
print("attached", flush=True)
time.sleep(100000)
