"""Kedro's data_processing pipeline: clean the raw tables and join them into the model input table."""
