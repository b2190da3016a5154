"""Example resource-type modules (``BULKAPI_TYPES=examples.crm``)."""
