#include <string.h>

#include "balance.h"

static const char *const balance_names[BALANCE_COUNT] = {
	[BALANCE_ROUND_ROBIN] = "round_robin", [BALANCE_LEAST_CONNECTIONS] = "least_connections",
	[BALANCE_WEIGHTED] = "weighted",       [BALANCE_IP_HASH] = "ip_hash",
	[BALANCE_ADAPTIVE] = "adaptive",       [BALANCE_RANDOM] = "random",
};

const char *
balance_strategy_name(enum balance_strategy st)
{
	return (unsigned)st < BALANCE_COUNT ? balance_names[st] : "unknown";
}

int
balance_strategy_from_name(const char *name)
{
	for (int i = 0; i < BALANCE_COUNT; i++)
		if (strcmp(name, balance_names[i]) == 0)
			return i;
	return -1;
}

const char *
balance_strategy_list(void)
{
	return "round_robin, least_connections, weighted, ip_hash, adaptive, random";
}
