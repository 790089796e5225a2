"""API keys for the edge: the store requests authenticate against, and the CLI that makes keys.

Keys are stored only as SHA-256 hashes, in a YAML file that is also the shape of the Kubernetes
Secret the edge mounts (see `keysfile` for the format).
"""

from switchyard.edge.auth.cli import main
from switchyard.edge.auth.keys import ApiKey, generate_key, hash_key
from switchyard.edge.auth.keysfile import KeysFileError
from switchyard.edge.auth.store import KeyStore

__all__ = ["ApiKey", "KeyStore", "KeysFileError", "generate_key", "hash_key", "main"]
