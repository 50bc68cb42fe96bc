"""The Python client SDK and the bots built on it."""
