# Loaded by the Python of every test (runner.py puts this folder on
# PYTHONPATH). With CONFORMANCE_CLIENT_TLS_MAX=1.2, the tests' TLS clients
# offer TLS 1.2 at most; the brokers are unaffected.
#
# Why: 08-ssl-connect-cert-auth-expired and -revoked expect the server's
# alert for a bad client certificate as an error of the handshake. Under
# TLS 1.3 (the default of bookworm's Python and OpenSSL) the client's
# handshake ends before the server has checked its certificate, so the
# alert comes after the client's first write, and that write can instead
# fail on the connection the server has just closed (SSLEOFError): the
# result depends on timing, with any broker. Under TLS 1.2 the alert ends
# the handshake itself, as the tests were written for.
import os

if os.environ.get("CONFORMANCE_CLIENT_TLS_MAX") == "1.2":
    import ssl

    _create_default_context = ssl.create_default_context

    def _tls12_default_context(*args, **kwargs):
        context = _create_default_context(*args, **kwargs)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        return context

    ssl.create_default_context = _tls12_default_context
