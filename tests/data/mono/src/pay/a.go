package main // pay
