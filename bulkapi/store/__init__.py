"""Persistence: tables, engine set-up and every SQL statement bulkapi runs."""
