"""Names shared by every layer: what a user id is.

A uid is whatever the app's ``user_id`` hook returns: a hashable value that JSON can encode
(the Redis backplane keys users by its JSON), most often a string or an int.
"""
from __future__ import annotations

import typing as t

#: A user id.
Uid: t.TypeAlias = t.Hashable
