"""Checks a payload as seed 004's receiver does (split on ':', python-ecdsa
defaults: SHA-1, raw r||s) and prints the cleartext after the timestamp.
Exits 1 when the signature is invalid.

usage: ecdsa_verify.py PUBLIC.PEM PAYLOAD
"""
import base64
import sys

from ecdsa import BadSignatureError, VerifyingKey

payload = sys.argv[2]
cleartext, b64sig = payload.rsplit(":", 1)
signature = base64.b64decode(b64sig)
vk = VerifyingKey.from_pem(open(sys.argv[1]).read())
try:
    vk.verify(signature, cleartext.encode())
except BadSignatureError:
    print("Signature invalid!")
    sys.exit(1)
print(cleartext[10:])
