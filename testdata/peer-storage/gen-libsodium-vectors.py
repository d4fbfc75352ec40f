import ctypes, json, hashlib
s = ctypes.CDLL('libsodium.so.23')
assert s.sodium_init() >= 0
ver = ctypes.c_char_p(s.sodium_version_string()) if False else None
s.sodium_version_string.restype = ctypes.c_char_p
key = hashlib.sha256(b'lnbackup secretstream vectors').digest()
vectors = []
for n in list(range(0, 40)) + [63, 64, 65, 424, 1000]:
    for tag in ([0] if n not in (5, 16, 17) else [0, 1, 2, 3]):
        state = ctypes.create_string_buffer(s.crypto_secretstream_xchacha20poly1305_statebytes())
        header = ctypes.create_string_buffer(24)
        s.crypto_secretstream_xchacha20poly1305_init_push(state, header, key)
        m = bytes((i * 7 + n) & 0xff for i in range(n))
        out = ctypes.create_string_buffer(n + 17)
        outlen = ctypes.c_ulonglong()
        s.crypto_secretstream_xchacha20poly1305_push(state, out, ctypes.byref(outlen), m, ctypes.c_ulonglong(n), None, ctypes.c_ulonglong(0), ctypes.c_ubyte(tag))
        vectors.append({'tag': tag, 'message_hex': m.hex(), 'stream_hex': header.raw.hex() + out.raw[:outlen.value].hex()})
print(json.dumps({'generator': 'libsodium ' + s.sodium_version_string().decode() + ' crypto_secretstream_xchacha20poly1305_init_push + _push (one message, no ad), via Python ctypes', 'key_hex': key.hex(), 'vectors': vectors}, indent=1))
