"""Signs a message exactly as seed 004's sender does (python-ecdsa's
defaults: SHA-1, raw r||s), and prints the payload it would publish.

usage: ecdsa_sign.py PRIVATE.PEM MESSAGE
"""
import base64
import sys
import time

from ecdsa import SigningKey

sk = SigningKey.from_pem(open(sys.argv[1]).read())
message = str(int(time.time())) + sys.argv[2]
signed_message = sk.sign(message.encode())
out_message = message + ":" + base64.b64encode(signed_message).decode()
sys.stdout.write(out_message)
