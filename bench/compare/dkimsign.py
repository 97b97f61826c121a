#!/usr/bin/python3
"""dkimsign.py — prints one DKIM-signed message of about --size octets for
bench/compare/smtp.sh (CHECKS=1), signed with dkimpy (Debian's
python3-dkim) by --domain with --selector and the RSA key --key (PEM), the
author address --from in the signing domain so that DMARC aligns.

    dkimsign.py --key dkim.key --domain sender.test --selector bench \\
        --from sender@sender.test --to u0@bench.test --size 10240 > signed.eml
"""
import argparse
import sys

import dkim


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--key", required=True)
    ap.add_argument("--domain", required=True)
    ap.add_argument("--selector", required=True)
    ap.add_argument("--from", dest="sender", required=True)
    ap.add_argument("--to", required=True)
    ap.add_argument("--size", type=int, default=10240)
    a = ap.parse_args()
    header = (
        f"From: Bench Sender <{a.sender}>\r\n"
        f"To: <{a.to}>\r\n"
        "Subject: signed benchmark message\r\n"
        f"Message-ID: <bench.1@{a.domain}>\r\n"
        "Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
    )
    body = []
    n = len(header) + 600  # about the size of the signature field
    i = 0
    while n < a.size:
        line = f"line {i:05d} of a benchmark message: lorem ipsum dolor sit amet, consectetur adipisci\r\n"
        body.append(line)
        n += len(line)
        i += 1
    msg = (header + "".join(body)).encode("ascii")
    with open(a.key, "rb") as f:
        key = f.read()
    sig = dkim.sign(
        msg,
        a.selector.encode(),
        a.domain.encode(),
        key,
        include_headers=[b"from", b"to", b"subject", b"message-id", b"date", b"mime-version", b"content-type"],
    )
    sys.stdout.buffer.write(sig + msg)


if __name__ == "__main__":
    main()
