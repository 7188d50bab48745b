package main // checkout
