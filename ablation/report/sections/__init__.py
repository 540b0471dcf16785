"""The report's sections, each a function from the study's runs to a `render.Section`."""
