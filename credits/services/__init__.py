"""Writes of the credits app: grants (create, void, adjust, activate), expiry, burns and their returns,
recurring grants and auto top-ups. Every write locks the customer's row first."""
