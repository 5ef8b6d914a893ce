"""CMS (RFC 5652) structures for S/MIME: enveloped and signed data.

Parsing uses asn1crypto; every cryptographic operation uses cryptography.
"""
