package main // cart
