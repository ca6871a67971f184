"""Documents to triples (extraction, entity resolution, versioned provenance) and triples to text."""
