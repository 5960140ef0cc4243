"""The model layer: find, load and describe the models every command works on."""
