"""Datasets the recipes train on: image and text classification from the Hub, local folders or shipped data.

- :mod:`.images`: image classification datasets, transforms and the offline sklearn digits.
- :mod:`.decoded_images`: image datasets decoded once, augmented and normalised per batch.
- :mod:`.text`: text classification datasets and the shipped movie-review sentences.
"""
