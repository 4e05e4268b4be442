"""Imported by the decoding pool's fork server as it starts (its preload), and only there.

The fork server is the parent of every decoding process. A SIGKILLed producer left it and
them running for minutes; with this, the kernel kills the fork server when the producer dies
(PR_SET_PDEATHSIG), and each decoding process when the fork server dies (producers.pool).
"""

from producers.pool import die_with_parent

die_with_parent()
